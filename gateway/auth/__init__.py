"""Who is calling: the key format, the principal a key stands for, the cache of
managed keys, and the key management shared by the admin API and the CLI."""
