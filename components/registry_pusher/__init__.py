"""Pusher that publishes blessed models into a versioned registry folder."""
