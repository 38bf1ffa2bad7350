"""Pandera schemas built from the domain spec; the valid/rejected split."""
