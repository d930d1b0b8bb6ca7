"""(placeholder: rules land with the indexing family)."""
