"""The paper's claims as data (claims.toml), the one verdict rule, the scorecard."""
