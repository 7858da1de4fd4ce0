"""Published-results registry and static leaderboard; filled by the leaderboard work."""
