"""The engine of one audit case: resolve the unlearner spec, build the request, run the method, run a check."""
