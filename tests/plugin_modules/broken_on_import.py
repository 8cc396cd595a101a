"""A plugin module that fails while loading."""

raise ImportError("the plugin needs a package that is not installed")
