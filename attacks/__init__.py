"""Attack registry (TextAttack-based); filled by the attacks work."""
