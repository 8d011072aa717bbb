"""diffusim Streamlit front end (layout only; figures and logic live in sim/)."""

import streamlit as st

from sim.app import main

st.set_page_config(page_title="diffusim: global AI adoption", layout="wide")
main()
