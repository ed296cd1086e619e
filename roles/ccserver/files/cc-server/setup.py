from setuptools import setup

setup(
    name="cc-server-standin",
    version="0.1",
    description="Stand-in for CC-Server with its process layout (see the role's README)",
    packages=["cc_server"],
)
