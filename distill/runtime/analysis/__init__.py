"""Reading chains back: reports, their figures, comparisons, sweeps of chains."""
