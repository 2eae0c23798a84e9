"""A message: templates rendered into email and SMS (filters, locale styles, CSS inlined,
SMS encoding, unsubscribe links), and what crosses rendering, policy and delivery."""
