"""Integer TIR schedules per target (the default lowering is used until they land)."""
