"""Settings: ``base`` holds what every service shares; one small module per service."""
