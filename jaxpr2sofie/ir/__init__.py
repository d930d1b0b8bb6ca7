"""The IR: dimensions (the run-time batch), tensors, graphs with sub-graphs, the use-def index and
the operator classes. It knows no backend."""
