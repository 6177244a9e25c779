"""The bundled default models (``make models``): data, head selection, test report, card.

:mod:`.corpus` reads 4Q and the GTZAN classical excerpts into clip embeddings and splits them;
:mod:`.choose` picks the heads by grouped cross-validation and validation; :mod:`.report`
measures the exported model once on the test split, with bootstrap intervals, and applies the
vocabulary rule; :mod:`.plausibility` reads real soundtracks; :mod:`.card` writes the card.
"""
