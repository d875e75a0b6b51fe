"""The reducers of a study: AR, R_p^c, embeddings, agreement, and their tables."""
