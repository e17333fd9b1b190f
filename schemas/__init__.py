"""The object model: Kubernetes kinds as msgspec Structs, with quantities, selectors,
defaults, validation and the generated JSON Schema files. Imports nothing of kyb or services."""
