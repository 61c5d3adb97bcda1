"""Built-in example models (load with ``assimilation.load_model(name)``)."""
