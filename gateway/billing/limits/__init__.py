"""Per-key RPM/TPM limits and spend budgets: the pure state machine (`core`, on the rate
arithmetic of `gcra`, the budgets of `budget` and the client-facing wording of
`responses`) and its two homes, one process (`memory`) or every process on one Redis
(`redis`, whose Lua scripts live in `lua/` and are loaded by `scripts`)."""
