"""flask_patronlock.sandbox: the Patreon sandbox itself."""
