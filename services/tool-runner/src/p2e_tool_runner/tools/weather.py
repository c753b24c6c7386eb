"""get_weather: deterministic offline weather (a small table, and a stable hash for the rest).

No network: the same city always gives the same answer, so conversations, tests and
rollouts are reproducible.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from p2e_tool_runner.sdk import ToolContext, function_tool

CONDITIONS = ("sunny", "partly cloudy", "cloudy", "light rain", "rain", "windy", "foggy", "snow")

# name -> (condition, temperature_c, humidity_pct, wind_kph)
KNOWN_CITIES: dict[str, tuple[str, int, int, int]] = {
    "Paris": ("partly cloudy", 18, 62, 12),
    "Tokyo": ("sunny", 22, 55, 9),
    "London": ("light rain", 14, 81, 17),
    "New York": ("sunny", 20, 48, 14),
    "Berlin": ("cloudy", 15, 70, 11),
    "Sydney": ("sunny", 24, 60, 20),
    "San Francisco": ("foggy", 16, 78, 19),
    "Madrid": ("sunny", 27, 35, 8),
    "Rome": ("sunny", 25, 50, 7),
    "Toronto": ("windy", 11, 58, 28),
    "Singapore": ("rain", 30, 84, 10),
    "Mumbai": ("partly cloudy", 31, 74, 13),
    "Cairo": ("sunny", 33, 25, 15),
    "Moscow": ("snow", -4, 80, 16),
    "Reykjavik": ("windy", 5, 76, 35),
}
ALIASES = {"nyc": "New York", "new york city": "New York", "sf": "San Francisco"}


class WeatherArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    city: str = Field(min_length=1, max_length=100, description="City name, e.g. 'Paris'.")


def _key(city: str) -> str:
    return " ".join(city.split()).casefold()


_BY_KEY = {_key(name): name for name in KNOWN_CITIES}


def weather_for(city: str) -> dict[str, Any]:
    """The offline weather of `city`; the same input always gives the same output."""
    key = _key(city)
    name = ALIASES.get(key) or _BY_KEY.get(key)
    if name is not None:
        condition, temperature, humidity, wind = KNOWN_CITIES[name]
    else:
        name = " ".join(word.capitalize() for word in city.split())
        digest = hashlib.sha256(key.encode()).digest()
        condition = CONDITIONS[digest[0] % len(CONDITIONS)]
        temperature = -5 + digest[1] % 36
        humidity = 30 + digest[2] % 61
        wind = digest[3] % 41
    return {
        "city": name,
        "condition": condition,
        "temperature_c": temperature,
        "humidity_pct": humidity,
        "wind_kph": wind,
        "source": "offline",
    }


@function_tool(
    name="get_weather",
    description="Get the current weather for a city (offline, deterministic data).",
    input_schema=WeatherArgs,
    cache_ttl=300,
    side_effect_free=True,
)
async def get_weather(ctx: ToolContext, args: WeatherArgs) -> dict[str, Any]:
    return weather_for(args.city)
