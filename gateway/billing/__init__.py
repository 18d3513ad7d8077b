"""What a request may spend and what it did: limits, prices and cost, the admission and
settlement of each request, and the durable usage ledger."""
