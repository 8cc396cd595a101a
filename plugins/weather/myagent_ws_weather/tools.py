"""The weather tools, re-exported: they ship with the host as :mod:`myagent.demo.weather`
(so the weather example needs only ``pip install .``); this module keeps the plugin's
import path working."""

from myagent.demo.weather import CITIES, City, GetCityInfoTool, GetWeatherTool, find_city

__all__ = ["CITIES", "City", "GetCityInfoTool", "GetWeatherTool", "find_city"]
