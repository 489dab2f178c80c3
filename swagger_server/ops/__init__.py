"""Operations: metrics, access log, schema reload, worker lifecycle."""
