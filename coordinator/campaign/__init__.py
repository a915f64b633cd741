"""Measurement campaigns: the campaign file (:mod:`.spec`) and the plan it expands to
(:mod:`.plan`)."""
