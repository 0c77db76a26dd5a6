"""Who may do what, and when the bot replies: addressing, the reply gate (budgets, cooldown,
loop guards), operator permissions and the token bucket."""
