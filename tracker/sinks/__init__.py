"""Where transitions are delivered."""
