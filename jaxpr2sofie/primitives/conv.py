"""(placeholder: rules land with the conv family)."""
