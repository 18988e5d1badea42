"""What a test leaves behind: pcapng evidence and report sections."""
