"""The operator layer, modeled on SOFIE: tensors, operators, graph passes and emitters."""
