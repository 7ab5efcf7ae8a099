"""Common code of every CoWest service: configuration, the model catalog, schemas and clients."""
