"""The annotation page: people label what explanations show (thesis §4.3.3, Figs 9–12).

:mod:`~citylens.annotate.sample` draws the explanations to annotate (stratified by model,
city and θ, seeded); :mod:`~citylens.annotate.page` makes the self-contained page that
shows them and exports the CSV ``citylens agree`` reads. Pure: no store, no Ray
(``citylens.pipeline.annotate_page`` reads a study for them).
"""
