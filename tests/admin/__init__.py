"""flask_patronlock.admin: the creator's settings pages."""
