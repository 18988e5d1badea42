"""What a test asserts on: Capture, its fates, expected packets, failure messages."""
