"""The demo agent's knowledge: a few short encyclopedia passages, bundled so the demo needs no network."""

from __future__ import annotations

PASSAGES: dict[str, str] = {
    "Eiffel Tower": (
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. It was built for the 1889 "
        "World's Fair and completed in March 1889. It is 330 metres tall."
    ),
    "Apollo 11": (
        "Apollo 11 was the first crewed Moon landing. Neil Armstrong and Buzz Aldrin landed the lunar module Eagle "
        "on 20 July 1969, while Michael Collins orbited the Moon."
    ),
    "Sputnik 1": (
        "Sputnik 1 was the first artificial Earth satellite, launched by the Soviet Union on 4 October 1957. It "
        "orbited the Earth for three weeks before its batteries died."
    ),
    "Statue of Liberty": (
        "The Statue of Liberty, a gift from France to the United States, was dedicated in New York Harbor in 1886. "
        "Gustave Eiffel's company designed its internal iron framework."
    ),
    "Golden Gate Bridge": (
        "The Golden Gate Bridge, a suspension bridge across the Golden Gate strait in San Francisco, opened in 1937. "
        "Its main span is 1,280 metres long."
    ),
    "Great Wall of China": (
        "The Great Wall of China is a series of fortifications built over many centuries; most of the wall that "
        "stands today was built during the Ming dynasty (1368-1644)."
    ),
    "Mount Everest": (
        "Mount Everest is Earth's highest mountain above sea level, at 8,849 metres. Tenzing Norgay and Edmund "
        "Hillary made the first confirmed ascent on 29 May 1953."
    ),
    "Temporal": (
        "Temporal is a durable execution platform: a workflow's progress is recorded as an event history, so a "
        "crashed worker's runs continue on another worker without redoing completed activities."
    ),
    "DSPy": (
        "DSPy is a framework for programming language models with modules and signatures instead of hand-written "
        "prompts. Its ReAct module lets a model call tools in a loop."
    ),
    "Speed of light": (
        "The speed of light in vacuum is exactly 299,792,458 metres per second; light from the Sun takes about "
        "8 minutes and 20 seconds to reach the Earth."
    ),
}
