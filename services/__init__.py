"""CoWest services. Each sub-package is deployed on its own; they talk over HTTP and Redis only."""
