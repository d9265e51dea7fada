"""Pictures a person can look at: pair sheets, top-k grids, pose drawings."""
