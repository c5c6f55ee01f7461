"""Reading recordings: decode and resample, segment, timestamps from names, quality measures."""
