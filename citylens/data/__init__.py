"""Image sources: listing, hashing and splitting, decoding, the synthetic corpus."""
