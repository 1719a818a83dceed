"""Promise suites: what the whole extension promises across its modules (secrets stay
secret, hostile input, WeChat faults, several workers, concurrent logins, kept-alive
connections), each checked against every route at once."""
