"""The core's own plugins, registered like any other (``trylast``, so others override)."""
