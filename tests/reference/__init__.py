"""Reference implementations transcribed from the authors' published code, for parity tests only."""
