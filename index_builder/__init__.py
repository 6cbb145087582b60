"""The offline batch job: labelled reference photos -> embeddings in SQL -> a published FAISS index.

Split as clip-retrieval's inference is: `sources` reads what to embed, `dataset` decodes and transforms in
DataLoader workers, `writer` records embeddings in SQL, `runner` drives them and publishes the index."""
