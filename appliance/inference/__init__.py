"""Model backends behind one small protocol, and the registry that names their models."""
