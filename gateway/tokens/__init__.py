"""Offline token counting: tiktoken with its rank tables shipped in the package.

Its own package because two parts need it and neither should import the other:
billing (a limited key's reservation counts the prompt) and the mock provider (its
usage is counted honestly).
"""
