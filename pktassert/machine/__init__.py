"""What the host has and lacks, and the process's own upkeep (reaper, failpoints)."""
