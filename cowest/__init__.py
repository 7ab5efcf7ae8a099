"""The `cowest` operator CLI: provision models and run the stack (see cli.py)."""
