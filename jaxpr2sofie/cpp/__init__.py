"""The C++ backend: emission rules per operator class, the writer, its own preparation of a graph
(memory plan, weight packing, thread split), kernels, weight files and the build service."""
