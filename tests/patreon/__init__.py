"""flask_patronlock.patreon: the HTTP client, JSON:API parsing and webhook signatures."""
