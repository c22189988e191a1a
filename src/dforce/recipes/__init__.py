"""The recipes: one folder per domain, each holding its data/env, recipe, metrics, plots, CLI and presets.

    sequence/       your own sequences: dforce train | sample | eval | info | demo
    forecast/       probabilistic forecasting: dforce forecast
    planning/       Maze2D planning: dforce plan, dforce data maze2d
    video/          video world models: dforce video, dforce data vizdoom
    imitation/      imitation with memory: dforce imitation
    compositional/  compositional generation: dforce compositional

A recipe builds on the core (``dforce.diffusion``, ``scheduling``, ``objective``, ``sampler``, ``guidance``,
``models``) and the engine (``dforce.engine``); recipes do not import each other.
"""
