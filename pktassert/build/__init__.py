"""Sources checked and compiled, objects checked, the build cache."""
