"""The repository's own test configuration (the plugin itself is registered through pytest11)."""

pytest_plugins = ["pytester"]
