// CONTRACT PLACEHOLDER (the web-core helper writes it): follow /api/stream, swap <main id="live">.
