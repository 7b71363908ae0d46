"""Training losses: the detector's set criterion with Hungarian matching, symmetry-aware point matching."""
