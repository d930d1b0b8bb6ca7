"""(placeholder: rules land with the pooling family)."""
