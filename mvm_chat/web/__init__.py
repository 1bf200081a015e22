"""The chat page and the admin dashboard: server-rendered HTML, every asset shipped here."""
